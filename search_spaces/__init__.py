"""YAML search spaces shipped with mrfbench (package data); see ``mrfbench.spaces``."""

from mrfbench.cli import app

app(prog_name="mrfbench")

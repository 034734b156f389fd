"""The latent maths the models are built from, one module per family: full-covariance Gaussians and their
masked Cholesky layout, experts (products and mixtures), asymmetric Laplace and generalized hyperbolic
laws, MMD, and Metropolis-within-Gibbs sampling of energy-based laws."""

from mrfbench.models.latent import noise
from mrfbench.models.latent.experts import (
    dreg_surrogate,
    factorised,
    gradient_scaled,
    log_mean_exp,
    mixture_log_prob,
    nonempty_subsets,
    product_of_experts,
    standard,
)
from mrfbench.models.latent.gaussian import CholeskyLayout, FullCovGaussian, block_indices, kl_full_cov_gaussian
from mrfbench.models.latent.laplace import (
    AsymmetricLaplace,
    GeneralizedHyperbolic,
    bessel_k_ratio,
    log_bessel_k,
    sample_gig,
)
from mrfbench.models.latent.mcmc import MHResult, MHSettings, metropolis_within_gibbs
from mrfbench.models.latent.mmd import MMD_SCALES, rbf_mmd2

__all__ = [
    "MMD_SCALES", "AsymmetricLaplace", "CholeskyLayout", "FullCovGaussian", "GeneralizedHyperbolic",
    "MHResult", "MHSettings", "bessel_k_ratio", "block_indices", "dreg_surrogate", "gradient_scaled", "factorised",
    "kl_full_cov_gaussian", "log_bessel_k", "log_mean_exp", "metropolis_within_gibbs", "mixture_log_prob",
    "noise", "nonempty_subsets", "product_of_experts", "rbf_mmd2", "sample_gig", "standard",
]

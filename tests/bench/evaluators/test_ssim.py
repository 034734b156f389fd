import pytest
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from mrfbench.datasets.classifiers import as_float
from mrfbench.evaluators.ssim import TAPS, gaussian_taps, ssim, window_matrix


@pytest.mark.parametrize("shape", [(6, 1, 28, 28), (4, 3, 28, 28), (3, 2, 17, 23)])
def test_ssim_is_torchmetrics_default_ssim(shape):
    generator = torch.Generator().manual_seed(sum(shape))
    a = (torch.rand(shape, generator=generator) * 255).to(torch.uint8)
    b = (a.float() * 0.7 + torch.rand(shape, generator=generator) * 70).clamp(0, 255).to(torch.uint8)
    for x, y in ((a, b), (a, torch.zeros_like(a)), (as_float(a), as_float(b))):
        expected = float(structural_similarity_index_measure(as_float(x), as_float(y), data_range=1.0))
        assert ssim(x, y) == pytest.approx(expected, abs=2e-7)


def test_ssim_of_identical_images_is_one_and_of_unrelated_ones_near_zero():
    x = torch.rand(4, 3, 28, 28)
    assert ssim(x, x) == pytest.approx(1.0)
    assert ssim(x, torch.rand(4, 3, 28, 28)) < 0.5


def test_window_matrix_filters_each_row_with_the_normalised_window():
    taps, matrix = gaussian_taps(), window_matrix(5)
    assert taps.sum() == pytest.approx(1.0) and matrix.shape == (5 + TAPS - 1, 5)
    assert torch.equal(matrix[2 : 2 + TAPS, 2], taps) and matrix[:, 2].count_nonzero() == TAPS


def test_ssim_refuses_batches_of_different_shapes():
    with pytest.raises(ValueError, match="one shape"):
        ssim(torch.rand(2, 1, 28, 28), torch.rand(3, 1, 28, 28))

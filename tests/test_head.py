"""The prompt module: size, shapes, input checks, and its start near a given prompt."""

from __future__ import annotations

import pytest
import torch

from autoprompt.model.head import PromptHead, count_parameters


@pytest.fixture
def head() -> PromptHead:
    torch.manual_seed(0)
    return PromptHead()


def test_parameter_count(head: PromptHead) -> None:
    """The paper's module has 2,433,984 trainable parameters."""
    assert count_parameters(head) == 2_433_984
    head.reduce.requires_grad_(False)
    assert count_parameters(head) == 2_433_984 - (256 * 128 + 128), "frozen parameters must not count"


def test_output_shapes(head: PromptHead) -> None:
    """B x 256 x 64 x 64 in -> sparse B x 2 x 256 and dense B x 256 x 64 x 64, dense non-negative."""
    embeddings = torch.randn(3, 256, 64, 64, generator=torch.Generator().manual_seed(1))
    sparse, dense = head(embeddings)
    assert sparse.shape == (3, 2, 256)
    assert dense.shape == (3, 256, 64, 64)
    assert (dense >= 0).all(), "the dense output passes through a ReLU"
    single_sparse, single_dense = head(embeddings[1:2])
    torch.testing.assert_close(single_sparse, sparse[1:2], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(single_dense, dense[1:2], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 256, 32, 32), (2, 128, 64, 64), (2, 64, 64, 256)])
def test_wrong_input_shape_is_refused(head: PromptHead, shape: tuple[int, ...]) -> None:
    """Anything but B x 256 x 64 x 64 raises AssertionError naming what it got."""
    with pytest.raises(AssertionError, match=r"expected B x 256 x 64 x 64 embeddings, got") as error:
        head(torch.zeros(shape))
    assert str(tuple(shape)) in str(error.value)


def test_start_from_prompt_gives_the_prompt_for_any_input(head: PromptHead) -> None:
    """After start_from_prompt, outputs ~= (sparse, relu(dense)) whatever the embeddings."""
    generator = torch.Generator().manual_seed(2)
    sparse_prompt = torch.randn(2, 256, generator=generator)
    dense_prompt = torch.randn(256, generator=generator)  # half negative: the ReLU keeps the rest
    inputs = [
        torch.randn(2, 256, 64, 64, generator=generator),
        5.0 * torch.rand(2, 256, 64, 64, generator=generator),
        torch.zeros(1, 256, 64, 64),
    ]
    before, _ = head(inputs[0])
    assert (before[0] - sparse_prompt).abs().max() > 0.5, "the random head already gives the prompt"

    head.start_from_prompt(sparse_prompt, dense_prompt, scale=1e-3)
    for embeddings in inputs:
        sparse, dense = head(embeddings)
        expected_dense = dense_prompt.clamp(min=0)[None, :, None, None].expand_as(dense)
        torch.testing.assert_close(sparse, sparse_prompt.expand_as(sparse), rtol=0, atol=2e-2)
        torch.testing.assert_close(dense, expected_dense, rtol=0, atol=2e-2)


def test_start_from_prompt_checks_shapes(head: PromptHead) -> None:
    with pytest.raises(AssertionError, match="sparse prompt"):
        head.start_from_prompt(torch.zeros(1, 2, 256), torch.zeros(256), scale=0.01)
    with pytest.raises(AssertionError, match="dense prompt"):
        head.start_from_prompt(torch.zeros(2, 256), torch.zeros(256, 64, 64), scale=0.01)

"""Streaming top-k: a total order (value, then lower image, then position), whatever the batching."""

import torch

from deepvis.engine.topk import TopK


def _run(acts, batch, k=5):
    top = TopK.empty(acts.shape[1], k)
    for start in range(0, len(acts), batch):
        top = top.update(acts[start:start + batch], torch.arange(start, min(start + batch, len(acts))))
    return top


def test_ties_break_by_lower_image_and_first_position():
    acts = torch.zeros(4, 1, 2, 2)
    acts[3, 0, 1, 1] = 2.0
    acts[1, 0, 0, 1] = 1.0
    acts[1, 0, 1, 0] = 1.0  # same value later in the same image: the first position wins
    acts[2, 0, 1, 0] = 1.0
    top = _run(acts, 4, k=3)
    assert top.values.tolist() == [[2.0, 1.0, 1.0]]
    assert top.images.tolist() == [[3, 1, 2]]
    assert top.ys.tolist() == [[1, 0, 1]] and top.xs.tolist() == [[1, 1, 0]]


def test_any_batching_and_merge_give_the_same_result():
    g = torch.Generator().manual_seed(0)
    acts = torch.randint(0, 4, (60, 3, 3, 3), generator=g).float()  # many ties
    reference = _run(acts, 60)
    for batch in (1, 7, 16):
        top = _run(acts, batch)
        assert all(torch.equal(a, b) for a, b in zip(top.state().values(), reference.state().values()))
    second = _run(acts[25:], 5)  # a second worker's share, its image indices shifted back to the dataset's
    second.images += 25
    halves = _run(acts[:25], 5).merge(second)
    assert torch.equal(halves.images, reference.images) and torch.equal(halves.values, reference.values)


def test_fully_connected_and_fewer_images_than_k():
    top = _run(torch.tensor([[0.5, -1.0], [0.7, float("nan")]]), 1, k=3)
    assert top.images.tolist() == [[1, 0, -1], [0, 1, -1]]
    assert top.ys.tolist()[0][:2] == [-1, -1]
    assert top.values[1, 1] == float("-inf")  # NaN ranks last

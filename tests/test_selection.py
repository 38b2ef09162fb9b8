"""Dynamic sample selection: the virtual step has no side effects and matches a hand computation; in a short
training run, wrong-label samples end with the lowest weights and the scores land in the synthetic dataset."""

import copy
import math

import datasets
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PrinterCallback, Trainer, TrainingArguments

from rlsyn_trl.recognizer.selection import DynamicSampleSelectionCallback, SelectionConfig, virtual_step_utilities

NUM_CLASSES = 4


def per_sample_cross_entropy(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, labels, reduction="none")


class TinyNet(nn.Module):
    """Flattened 4x4 images -> Linear -> BatchNorm -> ReLU -> Linear: parameters plus BatchNorm buffers."""

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(16, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, NUM_CLASSES)
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.layers(pixel_values.flatten(1))


def test_virtual_step_leaves_model_optimizer_and_rng_unchanged():
    torch.manual_seed(0)
    model = TinyNet().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    images, labels = torch.randn(8, 1, 4, 4), torch.randint(0, NUM_CLASSES, (8,))
    per_sample_cross_entropy(model(images), labels).mean().backward()
    optimizer.step()  # the optimizer now has state and the parameters have gradients
    model_state = copy.deepcopy(model.state_dict())
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    gradients = [p.grad.clone() for p in model.parameters()]
    candidates = torch.randn(5, 1, 4, 4)
    rng_state = torch.get_rng_state()

    utilities = virtual_step_utilities(
        model, per_sample_cross_entropy, images, labels, candidates, torch.tensor([0, 1, 2, 3, 0]), 0.5
    )

    assert utilities.shape == (5,) and torch.isfinite(utilities).all() and not utilities.requires_grad
    assert model.training
    for name, value in model.state_dict().items():  # parameters and BatchNorm buffers, bitwise
        assert torch.equal(value, model_state[name]), name
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), gradients))
    assert optimizer.state_dict()["param_groups"] == optimizer_state["param_groups"]
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            assert torch.equal(value, optimizer_state["state"][index][key]), (index, key)
    assert torch.equal(torch.get_rng_state(), rng_state)


@pytest.mark.parametrize("step_on_candidates", [True, False])
def test_utilities_match_hand_computed_virtual_step(step_on_candidates):
    torch.manual_seed(1)
    model = nn.Linear(3, NUM_CLASSES).double()
    batch, batch_labels = torch.randn(6, 3, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0, 1])
    candidates, candidate_labels = torch.randn(4, 3, dtype=torch.float64), torch.tensor([3, 2, 1, 0])
    lr = 0.7

    def losses(weight, bias, inputs, targets):
        logits = inputs @ weight.T + bias
        return torch.logsumexp(logits, dim=1) - logits[torch.arange(len(targets)), targets]

    weight, bias = model.weight.detach(), model.bias.detach()
    # the virtual step's batch: real + candidates (the paper), or the real images alone
    inputs, targets = (batch, batch_labels)
    if step_on_candidates:
        inputs, targets = torch.cat([batch, candidates]), torch.cat([batch_labels, candidate_labels])
    residual = torch.softmax(inputs @ weight.T + bias, dim=1) - F.one_hot(targets, NUM_CLASSES)  # dL_i/dlogits
    new_weight = weight - lr * residual.T @ inputs / len(inputs)
    new_bias = bias - lr * residual.mean(dim=0)
    expected = losses(new_weight, new_bias, candidates, candidate_labels) - losses(
        weight, bias, candidates, candidate_labels
    )

    utilities = virtual_step_utilities(
        model,
        per_sample_cross_entropy,
        batch,
        batch_labels,
        candidates,
        candidate_labels,
        lr,
        step_on_candidates=step_on_candidates,
    )
    torch.testing.assert_close(utilities, expected)


def blob_images(generator: torch.Generator, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Well-separated Gaussian blobs shaped as 1x4x4 images: class c is centred on 4 * e_c."""
    labels = torch.arange(NUM_CLASSES).repeat_interleave(per_class)
    centres = 4 * torch.eye(NUM_CLASSES, 16)
    return (centres[labels] + torch.randn(len(labels), 16, generator=generator)).view(-1, 1, 4, 4), labels


class Items(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.images[index], "labels": self.labels[index]}


@pytest.fixture(scope="module", params=["mixed", "real"])
def selection_run(request, tmp_path_factory):
    """20 SGD steps on real + pool with a selection round after every step; a quarter of the pool is mislabelled."""
    generator = torch.Generator().manual_seed(0)
    real_images, real_labels = blob_images(generator, 8)
    pool_images, true_labels = blob_images(generator, 12)
    wrong = torch.zeros(len(true_labels), dtype=torch.bool)
    wrong[::4] = True
    pool_labels = true_labels.clone()
    offsets = torch.randint(1, NUM_CLASSES, (int(wrong.sum()),), generator=generator)
    pool_labels[wrong] = (true_labels[wrong] + offsets) % NUM_CLASSES
    pool = datasets.Dataset.from_dict({"label": pool_labels.tolist(), "wrong": wrong.tolist()})
    output_dir = tmp_path_factory.mktemp("selection")

    torch.manual_seed(0)
    args = TrainingArguments(
        output_dir=str(output_dir / "trainer"),
        max_steps=20,
        per_device_train_batch_size=16,
        learning_rate=0.3,
        optim="sgd",
        report_to="none",
        save_strategy="no",
        logging_steps=1000,
        disable_tqdm=True,
        remove_unused_columns=False,
        use_cpu=True,
        seed=0,
    )
    trainer = Trainer(
        model=TinyNet(),
        args=args,
        train_dataset=Items(torch.cat([real_images, pool_images]), torch.cat([real_labels, pool_labels])),
        compute_loss_func=lambda outputs, labels, num_items_in_batch=None: per_sample_cross_entropy(
            outputs, labels
        ).mean(),
        callbacks=[],
    )
    trainer.remove_callback(PrinterCallback)
    config = SelectionConfig(
        keep_ratio=0.75,
        round_every=1,
        virtual_lr=0.1,
        candidates_per_round=len(pool),
        real_per_round=128,  # with a mixed step, the real consensus must outweigh each candidate's self-influence
        virtual_batch=request.param,
        scored_dataset_path=str(output_dir / "scored"),
    )
    callback = DynamicSampleSelectionCallback(
        trainer,
        config,
        per_sample_cross_entropy,
        real=(real_images, real_labels),
        synthetic=(pool_images, pool_labels),
        synthetic_dataset=pool,
    )
    trainer.add_callback(callback)
    trainer.train()
    return trainer, callback, wrong, config


def test_wrong_label_samples_end_with_the_lowest_weights(selection_run):
    _, callback, wrong, _ = selection_run
    lowest = callback.weights.argsort()[: int(wrong.sum())]
    # dl ranks by consistency with the real data; an outlier with a large own gradient can survive a few rounds,
    # so allow one miss among the twelve lowest.
    assert wrong[lowest].sum() >= int(wrong.sum()) - 1
    assert callback.weights[wrong].mean() < 0.2 * callback.weights[~wrong].mean()
    assert callback.utilities[wrong].mean() > callback.utilities[~wrong].mean()
    assert math.isclose(callback.weights.mean().item(), 1.0, rel_tol=1e-5)


def test_callback_logs_rounds_and_writes_scores_into_the_dataset(selection_run):
    trainer, callback, wrong, config = selection_run
    rounds = [entry for entry in trainer.state.log_history if "selection/utility_mean" in entry]
    assert len(rounds) == 20
    assert all(entry["selection/kept_fraction"] == 0.75 for entry in rounds)
    assert all(entry["selection/utility_min"] <= entry["selection/utility_max"] for entry in rounds)

    for scored in (callback.scored_dataset, datasets.load_from_disk(config.scored_dataset_path)):
        assert scored.column_names == ["label", "wrong", "utility", "selection_weight"]
        assert scored["wrong"] == wrong.tolist()
        torch.testing.assert_close(torch.tensor(scored["utility"]), callback.utilities)
        torch.testing.assert_close(torch.tensor(scored["selection_weight"]), callback.weights)

"""Helper of ``test_ddpo.py``: one DDPO epoch on tiny models, each rank saving what it saw.

python tests/trainers/ddpo_processes.py ADAPTER ENCODER OUTPUT [REFERENCE_STRENGTH]                    (1 process)
accelerate launch --cpu --num_processes 2 tests/trainers/ddpo_processes.py ADAPTER ENCODER OUTPUT [...] (2 processes)

Writes ``OUTPUT/rank{r}.pt``: the gathered epoch's labels and reward terms, and the trainable tensors after training.
"""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

from rlsyn_trl.encoders import load_feature_extractor  # noqa: E402
from rlsyn_trl.provenance import input_provenance, resolve_data_split  # noqa: E402
from rlsyn_trl.rewards import IdentityReward  # noqa: E402
from rlsyn_trl.trainers import IdentityDDPOPipeline, RLSynDDPOConfig, RLSynDDPOTrainer  # noqa: E402
from rlsyn_trl.trainers.ddpo.data import identity_tensors  # noqa: E402


def build_trainer(config: RLSynDDPOConfig, trainer_class=RLSynDDPOTrainer, **kwargs) -> RLSynDDPOTrainer:
    """The DDPO recipe's inputs for a tiny adapter: its split, pipeline, real tensors and reward."""
    data = resolve_data_split(config, input_provenance(config.adapter)["data"], config.adapter).load()
    pipeline = IdentityDDPOPipeline.from_pretrained(config.adapter, lora_config=config.lora_config())
    images, labels = identity_tensors(data["train"], pipeline.generator)
    names = pipeline.generator.label_names
    phi = load_feature_extractor(config.encoder)
    reward = IdentityReward.build(phi, images, labels, names, options=config.reward_options())
    return trainer_class(config, pipeline, reward, (images, labels), **kwargs)


class RecordingTrainer(RLSynDDPOTrainer):
    """Keeps every epoch's reward result as this rank computed it."""

    def __init__(self, *args, **kwargs):
        self.results = []
        super().__init__(*args, **kwargs)

    def _score_epoch(self, images, labels):
        result = super()._score_epoch(images, labels)
        self.results.append(result)
        return result


def main(adapter: str, encoder: str, output: str, reference_strength: str | None = None) -> None:
    torch.set_num_threads(1)
    config = RLSynDDPOConfig(
        adapter=adapter,
        encoder=encoder,
        output_dir=output,
        identities_per_epoch=4,
        samples_per_identity=4,
        sample_batch_size=4,
        train_batch_size=4,
        sample_num_steps=4 if reference_strength else 3,
        train_timestep_fraction=0.67,
        reference_strength=reference_strength,
        num_epochs=1,
        lora_rank=2,
        train_learning_rate=1e-3,
        denoise_coef=0.1,
        denoise_batch_size=4,
    )
    trainer = build_trainer(config, RecordingTrainer)
    trainer.train()
    result = trainer.results[0]
    model = trainer.sd_pipeline.generator.transformer
    torch.save(
        {
            "labels": result["labels"].cpu(),
            **{key: result[key].cpu() for key in ("sem", "cov", "exp", "z_sem", "z_cov", "z_exp", "total")},
            "trainable": {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad},
            "num_processes": trainer.accelerator.num_processes,
        },
        os.path.join(output, f"rank{trainer.accelerator.process_index}.pt"),
    )
    trainer.accelerator.end_training()


if __name__ == "__main__":
    main(*sys.argv[1:5])

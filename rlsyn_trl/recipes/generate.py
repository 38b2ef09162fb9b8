"""Generate a synthetic identity dataset from an adapter, with rewards, memorisation audit and card.

python recipes/generate.py --config recipes/orl_faces/generate.yaml [--adapter owner/name] [--push_to_hub true ...]
"""

from trl import TrlParser

from rlsyn_trl.generation import GenerationConfig, generate_synthetic_dataset

if __name__ == "__main__":
    (config,) = TrlParser((GenerationConfig,)).parse_args_and_config()
    dataset, summary = generate_synthetic_dataset(config)
    audit = summary["audit"]["memorization"]
    floor = summary["reference"]["memorization"]["rate"] if summary["reference"] else None
    print(f"{len(dataset)} samples in {config.output_dir}; memorisation rate {audit['rate']:.1%}", end="")
    print(f" (held-out real floor {floor:.1%})" if floor is not None else "")

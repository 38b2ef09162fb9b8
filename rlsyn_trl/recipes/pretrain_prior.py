"""Train the public priors (DiT generator + identity feature extractor).

accelerate launch recipes/pretrain_prior.py --config recipes/orl_faces/prior.yaml
"""

from trl import TrlParser

from rlsyn_trl.priors import PriorConfig, train_priors

if __name__ == "__main__":
    (config,) = TrlParser((PriorConfig,)).parse_args_and_config()
    print(train_priors(config))

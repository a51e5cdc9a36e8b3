"""A tiny config for every registered model, so the whole zoo trains in seconds in the tests."""

TINY = {
    "shared_bottom": {"embedding_dim": 16, "bottom": [32], "tower": [8]},
    "mmoe": {"embedding_dim": 16, "num_experts": 2, "expert": [32], "tower": [8]},
    "ple": {"embedding_dim": 16, "levels": 2, "expert_dim": 16, "tower": [8]},
    "star": {"embedding_dim": 16, "hidden": [32], "aux_hidden": [8]},
    "sasrec": {"embedding_dim": 16, "max_len": 20, "num_layers": 1, "num_heads": 2, "dropout": 0.1},
    "lightgcn": {"embedding_dim": 16, "num_layers": 2},
    "emcdr": {"embedding_dim": 16, "mapping_hidden": [16]},
    "popularity": {},
    "random": {},
}

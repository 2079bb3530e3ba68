"""ddp_mlp bug: every 10th step (a "logging" step) the loop calls the unwrapped model,
`model.module(x)`; DDP's all-reduce is armed only by its own forward, so that backward()
syncs nothing, each rank steps on its local gradient and the replicas drift apart."""
from common import run


def main(argv=None):
    return run(argv, raw_module_every=10)


if __name__ == "__main__":
    main()

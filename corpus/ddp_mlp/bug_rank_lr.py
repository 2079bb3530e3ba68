"""ddp_mlp bug: the learning rate is scaled with LOCAL_RANK + 1 instead of the world size,
so every rank steps with a different learning rate and the replicas diverge from step 0."""
from common import run


def main(argv=None):
    return run(argv, lr_by_local_rank=True)


if __name__ == "__main__":
    main()

"""ddp_mlp reference: an MLP trained with DistributedDataParallel on 2 CPU ranks (gloo),
each rank on its own DistributedSampler shard. Run with torchrun or plainly (spawns 2)."""
from common import run


def main(argv=None):
    return run(argv)


if __name__ == "__main__":
    main()

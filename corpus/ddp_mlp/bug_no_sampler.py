"""ddp_mlp bug: the DataLoader has shuffle=True but no DistributedSampler; every rank is
seeded alike, so both ranks train on identical batches (2 GPUs' worth of compute on 1 GPU's data)."""
from common import run


def main(argv=None):
    return run(argv, sampler=False)


if __name__ == "__main__":
    main()

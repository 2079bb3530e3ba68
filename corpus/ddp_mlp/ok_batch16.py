"""ddp_mlp ok: a per-rank batch size of 16 instead of 32, the same on every rank."""
from common import run


def main(argv=None):
    return run(argv, batch=16)


if __name__ == "__main__":
    main()

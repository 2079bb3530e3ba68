"""ddp_mlp ok: another seed."""
from common import run


def main(argv=None):
    return run(argv, seed=17)


if __name__ == "__main__":
    main()

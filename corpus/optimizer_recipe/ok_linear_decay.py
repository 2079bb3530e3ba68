"""optimizer_recipe ok variant: linear decay to 10 % instead of cosine (same warm-up and peak)."""
from common import run


def main(argv=None):
    return run(argv, schedule='linear')  # OK: another decay with the same peak


if __name__ == "__main__":
    main()

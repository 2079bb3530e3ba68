"""optimizer_recipe bug (GPT2-Chinese issue 60): the warm-up length is a default of 1,000 steps
kept for a run of 96, so the learning rate never gets above 10 % of its peak and the model
barely learns."""
from common import run


def main(argv=None):
    return run(argv, warmup=1000)  # BUG: a warm-up longer than the whole run


if __name__ == "__main__":
    main()

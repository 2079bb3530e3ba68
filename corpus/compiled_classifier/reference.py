"""compiled_classifier reference: the model is trained through torch.compile(model)."""
from common import run


def main(argv=None):
    return run(argv)


if __name__ == "__main__":
    main()

"""periodic_validation bug (super-gradients issue 416): the training DataLoader is built
without shuffle=True over a folder listed class by class, so every batch holds one class
and the model chases the class of the moment."""
from common import run


def main(argv=None):
    return run(argv, shuffle=False)  # BUG: DataLoader(train_set, batch_size=32) without shuffle=True


if __name__ == "__main__":
    main()

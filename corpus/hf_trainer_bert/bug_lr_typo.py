"""hf_trainer_bert bug (learning_rate=2e-1 where 2e-3 was meant, two orders of magnitude
off): the Trainer takes it without a word and the loss stays at chance level."""
from common import run


def main(argv=None):
    return run(argv, learning_rate=2e-1)  # BUG: 100x the intended learning rate


if __name__ == "__main__":
    main()

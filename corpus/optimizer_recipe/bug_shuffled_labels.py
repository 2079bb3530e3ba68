"""optimizer_recipe bug (mlcommons/GaNDLF PR 870, DrexelChatbotGroup/DrexelChatbot issue 15): the
training labels are permuted on their own, separately from the rows, so a row's label no
longer belongs to it and nothing can be learned; the loss stays flat."""
from common import run


def main(argv=None):
    return run(argv, shuffled_labels=True)  # BUG: labels shuffled independently of the inputs


if __name__ == "__main__":
    main()

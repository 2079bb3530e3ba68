"""optimizer_recipe bug (Lightning-AI/lit-llama issue 254, ServiceNow/Fast-LLM issue 542): one
parameter group with weight decay on everything, LayerNorm weights and biases included,
where the recipe exempts them."""
from common import run


def main(argv=None):
    return run(argv, decay_everything=True)  # BUG: no no-decay group


if __name__ == "__main__":
    main()

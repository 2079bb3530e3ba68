"""optimizer_recipe reference: a residual MLP with LayerNorm, SGD with momentum over a decayed
group (weight matrices) and an undecayed one (biases, LayerNorm), a learning rate computed
every step (5 warm-up steps, cosine decay) written into every group, gradient clipping at 1."""
from common import run


def main(argv=None):
    return run(argv)


if __name__ == "__main__":
    main()

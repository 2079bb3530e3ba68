"""invar's invariants: templates, mining, checking, explaining, and the command line."""
__version__ = "0.1.0"

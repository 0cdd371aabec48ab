"""`python -m edgekd`: the command line (what torchrun starts on each process)."""
from .cli import main

main()

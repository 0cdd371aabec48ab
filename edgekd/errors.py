class EdgekdError(Exception):
    """A problem with the user's input or environment.

    The CLI prints the message as one line and exits with status 2, so messages must say what is
    wrong and what to do, in one sentence.
    """

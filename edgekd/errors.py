class EdgekdError(Exception):
    """A problem with the user's input or environment.

    The CLI prints the message as one line and exits with status 2, so messages must say what is
    wrong and what to do, in one sentence.
    """


class Interrupted(EdgekdError):
    """Training stopped by Ctrl-C or `kill`; `state` says what was kept, the message how to go on."""

    def __init__(self, state: str, how_to_continue: str):
        super().__init__(f"{state}; {how_to_continue}")
        self.state = state

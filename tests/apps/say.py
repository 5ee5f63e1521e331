"""One line to stdout in one write, so lines of several processes never mix."""

import os


def say(text: str) -> None:
    os.write(1, (text + "\n").encode())

"""A logging handler that keeps the messages, for fixtures wider than pytest's ``caplog``."""

import logging


class Messages(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())

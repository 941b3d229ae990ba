"""A CustomLogger that does nothing: registered in a baseline proxy, it shows what any callback costs."""

from litellm.integrations.custom_logger import CustomLogger


class NoopCallback(CustomLogger):
    pass


handler = NoopCallback()

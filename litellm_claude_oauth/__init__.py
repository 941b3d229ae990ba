"""Use a Claude (Pro/Max) account through OAuth behind the LiteLLM proxy.

Importing the package does not import LiteLLM: the CLI stays fast. The proxy side
lives in :mod:`litellm_claude_oauth.hook`.
"""

__version__ = "0.1.0"

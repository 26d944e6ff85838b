"""``faceveil serve``: a local web page for anonymizing and recovering photos.

``faceveil.web.service`` does the work on bytes held in memory through
:mod:`faceveil.api` (the CLI's code path); ``faceveil.web.app`` builds the Gradio page
and serves it; ``faceveil.web.command`` adds the ``serve`` subcommand. Nothing here
imports Gradio until the page is built, so ``import faceveil`` and the CLI stay light.
"""

"""The web app: the Gradio page (`page`), its image input (`upload`) and the server (`serve`).

Only this package imports Gradio; the runtime library beside it (`demo.captioner` and what it uses)
serves the CLI and Python callers without it.
"""

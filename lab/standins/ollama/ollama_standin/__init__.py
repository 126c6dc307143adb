"""QueryGPT lab stand-in for Ollama -- a TEST FIXTURE, not Ollama and not an LLM.

Real Ollama cannot be downloaded in the lab, so this stdlib-only package speaks
enough of Ollama's HTTP API (and ships in the same release-archive layout) for
the ollama Ansible role and the RAG app to be exercised end to end. Never use
it as a production default.
"""

"""AiKore: a self-hosted control panel for AI WebUIs."""

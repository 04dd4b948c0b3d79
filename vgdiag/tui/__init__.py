"""The Textual dashboard (imported only by the commands that open it)."""

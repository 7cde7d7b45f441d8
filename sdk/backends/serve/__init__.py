"""The serve step and the engines it launches."""

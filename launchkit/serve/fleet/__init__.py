"""The server's workers as a whole: their states (``state``), the processes and the connection
to each (``process``), planning all of their cores at once (``plan``: pure; ``fleet``: applies it)."""

"""One model in torch, shared by serve's workers and ``launchkit optimize``: what optimization it
gets (``spec``, pure: the server's frontend reads it without torch), applying it (``transform``),
and loading an archive's model (``loading``)."""

"""The bottom layer: what the machine is (topology, CPU lists, ISA) and the basics every layer
shares (the error tree, value parsing, profiles). No torch, no click, no processes."""

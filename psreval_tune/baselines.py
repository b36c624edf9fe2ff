"""The baseline entries' names, declared once: the threat that is no threat, the aggregation rule that is
the plain (data-weighted) mean, and the paper's architectures (resnet9, the reproduction's default). Their
registry entries (threats/none.py, aggregators/fedavg.py, models/resnet9.py, models/resnet18.py) register under
these names, and every other module compares with these constants, never with the literals. This module
imports nothing, so config checks and analysis use it without loading torch."""

NO_THREAT = "none"  # threats/none.py: every client honest; the baseline each threat is compared with
PLAIN_MEAN = "fedavg"  # aggregators/fedavg.py: McMahan et al.'s mean; the baseline each robust rule replaces
PAPER_ARCH = "resnet9"  # models/resnet9.py: the paper's architecture, the one psreval reproduce trains by default
PAPER_ARCH_DEEP = "resnet18"  # models/resnet18.py: the paper's other architecture
PAPER_ARCHS = (PAPER_ARCH, PAPER_ARCH_DEEP)  # the architectures the paper measured (its claims are about them)

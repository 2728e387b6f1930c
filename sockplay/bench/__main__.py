"""
C{python -m sockplay.bench}: see L{sockplay.bench.command}.
"""

from sockplay.bench.command import main

main()

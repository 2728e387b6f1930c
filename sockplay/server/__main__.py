"""
C{python -m sockplay.server}: see L{sockplay.server.command}.
"""

from sockplay.server.command import main

main()

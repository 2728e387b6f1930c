"""
C{python -m sockplay.client}: see L{sockplay.client.command}.
"""

from sockplay.client.command import main

main()

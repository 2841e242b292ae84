"""`python -m mockapi`: run the mock API until SIGINT or SIGTERM."""

from mockapi.cli import main

main()

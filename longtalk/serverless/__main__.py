from .handler import main

main()

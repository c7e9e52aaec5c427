from .sweeps import main

main()

from spikefit.cli import main

main()

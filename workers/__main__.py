from arcsynth.workers.cli import main

main()

from arcsynth.producer.cli import main

main()

from speakerprint.cli.main import main

main()

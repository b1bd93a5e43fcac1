from zerospeech_api.cli import main

main()

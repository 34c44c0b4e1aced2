from jobd.cli import main

main()

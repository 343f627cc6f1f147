from cyburn.bench.cases import main

main()

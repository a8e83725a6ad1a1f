/* Test fixture: an ordinary shared library without the lifeline entry symbol. */
__attribute__((visibility("default"))) int add(int a, int b) { return a + b; }
